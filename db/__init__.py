"""PostgreSQL access: pools, transactions that nest, migrations and repositories."""
