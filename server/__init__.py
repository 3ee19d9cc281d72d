"""fitscore's server: the gRPC service and everything behind it."""
