"""An example package of one's own model, data and loss for sgdlab: an LSTM on the
marked-sum task (a classification form of Hochreiter & Schmidhuber's adding problem).

    sgdlab run examples/sequence.toml                    # model, data, loss from here
    sgdlab sweep examples/sequence_grid.toml --workers 2

The config names them by import path (``"seqlab.model:lstm"``); sgdlab finds the package
because it sits beside the config file.
"""
