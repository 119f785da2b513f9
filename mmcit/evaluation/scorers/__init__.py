"""The built-in scorers, one module per benchmark family (each registers into ``SCORERS``)."""
