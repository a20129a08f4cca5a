"""HTTP transports behind one interface (see ``_base.Transport``)."""
