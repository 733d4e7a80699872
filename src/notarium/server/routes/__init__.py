"""Request handlers, one module per concern. Each module has ``register(router)``."""
