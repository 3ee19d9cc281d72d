"""fitscore client: the generated gRPC stubs and the `fitscore` command-line tool."""
