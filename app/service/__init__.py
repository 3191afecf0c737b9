"""Service glue without Flask: settings, the resolved request plan, the view table, the pipeline."""
