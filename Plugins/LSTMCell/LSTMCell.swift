// placeholder, replaced by the LSTM cell
