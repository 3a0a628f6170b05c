"""HTTP/1.1 for the Kubernetes legs: checked heads (L{heads}) and the h11 relay (L{relay})."""
