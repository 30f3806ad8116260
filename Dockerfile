# Multi-stage build of the merch-store server.
#
#   docker build -t merch-store .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -e DATABASE_URL=postgres://... -e JWT_SECRET=... merch-store
#
# No secrets are baked in: DATABASE_URL and JWT_SECRET come from the
# environment at run time (see docker-compose.yml). Migrations are embedded
# in the binary and applied at start.
#
# The builder is the exact Go release go.mod names (deploy/dockerfile_test.go
# fails when they drift): the golang image sets GOTOOLCHAIN=local, so an
# older 1.26.x cached under "golang:1.26" would refuse to build.

FROM golang:1.26.8 AS build
WORKDIR /src
# Dependencies first, so editing code does not re-download modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION names the build in -version and merch_build_info
# (docker build --build-arg VERSION=$(git describe --always --dirty) .).
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/merch-store ./cmd/merch-store

# Static binary, no shell, runs as the image's unprivileged "nonroot" user
# (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/merch-store /usr/local/bin/merch-store
USER 65532:65532
ENV HTTP_ADDR=:8080 ADMIN_ADDR=:8081
EXPOSE 8080 8081
# No shell or curl here: the binary probes itself (`merch-store -probe URL`
# GETs URL within 2 s; exit 0 on 2xx, 1 otherwise; it reads no other
# configuration). Ready means the journal writes; start-period covers
# START_TIMEOUT (30 s). Set ADMIN_ADDR elsewhere and this must follow it.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/merch-store", "-probe", "http://127.0.0.1:8081/readyz"]
ENTRYPOINT ["/usr/local/bin/merch-store"]
