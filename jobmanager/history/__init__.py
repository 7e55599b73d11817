"""History: DuckDB views and stats over the store (in a child process of their own), the SQL sandbox,
grid pages, exports, and synthetic history for demos and benchmarks."""
