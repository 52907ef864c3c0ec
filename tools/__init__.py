"""Developer tools: sample and benchmark data generation (not installed with the package)."""
