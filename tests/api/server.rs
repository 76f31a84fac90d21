//! Server behaviour: health, reflection, shutdown, request ids, caller auth, limits.

#[allow(unused_imports)]
use super::*;
