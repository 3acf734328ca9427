//! A simulated Home Assistant that speaks HA's real protocol and can produce load and faults on
//! command. Not built yet; it will never be a dependency of `ha-client`.
