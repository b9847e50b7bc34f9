"""Applications on the shared model services: each is a service object (logic, no HTTP) with
its own routes, CLI group, console page and benchmark."""
