"""The published dataset: streaming writers, frames, the card and the charts."""
