"""One module per DVC stage (thin: read params, call the library, write outputs)."""
