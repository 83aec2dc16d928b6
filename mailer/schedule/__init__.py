"""Daily scheduled sends: slots, the leader lease, the runner and the service that drives them."""
