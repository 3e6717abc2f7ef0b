"""The Kubernetes endpoints task (Service, Endpoints, EndpointSlice cke-etcd)."""
