#![doc = include_str!("../README.md")]

pub mod commands;
pub mod components;
pub mod events;
pub mod plugins;
pub mod rate;
