"""An LSTM classifier: the last hidden state through a linear head."""

from torch import nn


class LSTMClassifier(nn.Module):
    def __init__(self, channels, hidden, layers, n_outputs):
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden, num_layers=layers, batch_first=True)
        self.classifier = nn.Linear(hidden, n_outputs)

    def forward(self, x):  # x: (batch, steps, channels)
        out, _ = self.lstm(x)
        return self.classifier(out[:, -1])


def lstm(cfg, input_shape, n_outputs, *, hidden=32, layers=1):
    """sgdlab's builder signature: ``(ModelConfig, input_shape, n_outputs, **options)``."""
    steps, channels = input_shape
    return LSTMClassifier(channels, hidden, layers, n_outputs)
