"""What happens at a connection's edge, before HTTP: the PROXY protocol, TLS, forwarded headers."""
