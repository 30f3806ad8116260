# Multi-stage build of the merch-store server.
#
#   docker build -t merch-store .
#   docker run --rm -p 8080:8080 \
#     -e DATABASE_URL=postgres://... -e JWT_SECRET=... merch-store
#
# No secrets are baked in: DATABASE_URL and JWT_SECRET come from the
# environment at run time (see docker-compose.yml). Migrations are embedded
# in the binary and applied at start.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so editing code does not re-download modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/merch-store ./cmd/merch-store

# Static binary, no shell, runs as the image's unprivileged "nonroot" user
# (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/merch-store /usr/local/bin/merch-store
USER 65532:65532
ENV HTTP_ADDR=:8080 ADMIN_ADDR=:8081
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/merch-store"]
