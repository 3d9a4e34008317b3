//! What the simulator publishes and consumes: nothing. It stands for a provider outside the
//! shop, so it has no sidecar and knows nothing of the shop's events.
