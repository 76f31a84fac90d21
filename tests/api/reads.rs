//! ListScripts and GetScript end to end.

#[allow(unused_imports)]
use super::*;
