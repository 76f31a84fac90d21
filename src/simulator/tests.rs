//! Tests of the simulator against `run()` on an ephemeral port.
