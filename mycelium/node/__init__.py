"""The running node: operations shared by CLI and control API, the daemon, the API server."""
