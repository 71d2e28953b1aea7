import SeqCell
