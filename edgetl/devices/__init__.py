"""Devices reached over ssh: ``ssh`` (one builder of every ssh call), ``transfer`` (the content-addressed
copy and its clean-up), ``install`` (exactly this edgetl, as a wheel), ``probe`` (what a device is),
``verify`` (edgetl verify there), ``emulated`` (an aarch64 device under qemu-user, no board needed).
``edgetl.benchmark.remote`` runs a bench on any of them."""
