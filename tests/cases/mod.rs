mod agents;
mod config;
mod fleet;
mod heartbeat;
mod leaf;
mod shipping;
mod up;
