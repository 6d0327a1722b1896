"""What `herald dev`, the tests, the benchmarks and the soak share: embedded servers, Herald's processes
started and waited for, and the invariant every one of them checks."""
