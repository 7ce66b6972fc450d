"""What the test suites and the benchmarks repeat, written once: accounts (``users``), access tokens
signed the way the auth service signs them (``tokens``), waiting for a service's log (``logs``) and
for a condition (``waiting``)."""
