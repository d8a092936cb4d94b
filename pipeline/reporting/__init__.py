"""The parts of ``report.html``: tolerant readers of a run's files, number formatting, and one module per section."""
