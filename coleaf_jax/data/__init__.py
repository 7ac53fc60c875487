"""Data: LLP layout reader, TFDS builder and the embedded synthetic generator."""
