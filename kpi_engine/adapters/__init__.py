"""Built-in adapters; each registers through the kpi_engine entry-point group."""
