"""Coverage-guided fuzzing of the sans-IO core with atheris (see README.md here)."""
