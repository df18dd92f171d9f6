"""The mesh around the services: certificates, Envoy's configuration, and starting it all."""
