# syntax=docker/dockerfile:1

# Build a static binary. Keep the build line in step with .ci/run, which
# runs the same command on every CI build (there is no Docker engine there).
FROM golang:1.26-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/taskqueue ./cmd/taskqueue

# Distroless static: no shell, CA certificates for https webhooks, and a
# non-root user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/taskqueue /usr/local/bin/taskqueue
USER nonroot:nonroot
EXPOSE 8080
# Every flag can be set as TASKQUEUE_<NAME>; see README.md.
ENV TASKQUEUE_ADDR=:8080
ENTRYPOINT ["/usr/local/bin/taskqueue"]
