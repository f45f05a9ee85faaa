"""Applications: the CLI, the web demo, batch files, video writing, prompt rewrite."""
