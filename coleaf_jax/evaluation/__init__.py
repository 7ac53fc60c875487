"""Evaluation: the AVVP metrics, predict -> binarise -> score, trained runs restored and scored, events, pictures, the run report, the published numbers."""
