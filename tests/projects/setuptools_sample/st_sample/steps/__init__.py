"""Steps of the sample pipeline."""
