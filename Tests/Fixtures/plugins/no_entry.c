/* A shared library that is not a SeqCell plugin: it exports no seqcell_plugin_entry. */
int seqcell_fixture_not_a_plugin(int x);

int seqcell_fixture_not_a_plugin(int x) { return x + 1; }
