// Package deploy holds no code. Its tests hold the container and cluster
// files to the conventions the README states, because the build machine
// has no Docker engine or Kubernetes cluster to try them on:
//
//   - ../Dockerfile builds with the Go version go.mod names, and its
//     HEALTHCHECK is the server's own `merch-store -probe` on the admin
//     listener's /readyz (the distroless image has no shell or curl);
//   - every service of ../docker-compose.yml, the cluster profile's too,
//     has a healthcheck, waits for its dependencies to be healthy
//     (condition: service_healthy), publishes ports on 127.0.0.1 only;
//     the servers are given at least SHUTDOWN_TIMEOUT to stop, and
//     PostgreSQL is checked over TCP (pg_isready -h 127.0.0.1: during
//     initdb the image's entrypoint runs a server on the unix socket
//     only, which pg_isready without -h takes for the real one);
//   - k8s/merch-store.yaml probes /readyz and /healthz on the admin port
//     and waits at least SHUTDOWN_TIMEOUT before it kills a pod.
//
// The facts about the server (SHUTDOWN_TIMEOUT's default, the probe's
// timeout) come from the built binary, so the tests follow the code.
package deploy
