//! Host-side test support: the bridge emulation regression suite and end-to-end tests live under `tests/`.
