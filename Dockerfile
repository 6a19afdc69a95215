# syntax=docker/dockerfile:1

# Build a static binary. Keep the build line in step with .ci/run, which
# runs the same command on every CI build (there is no Docker engine there).
# docker build --build-arg VERSION=$(git describe --always --dirty) -t taskqueue .
FROM golang:1.26-alpine AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/taskqueue ./cmd/taskqueue

# Distroless static: no shell, CA certificates for https webhooks, and a
# non-root user. The user is numeric (uid and gid 65532, distroless's
# nonroot) so Kubernetes' runAsNonRoot can verify it; a name cannot be.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/taskqueue /usr/local/bin/taskqueue
USER 65532:65532
EXPOSE 8080
# Every flag can be set as TASKQUEUE_<NAME>; see README.md.
ENV TASKQUEUE_ADDR=:8080
# No shell or curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/taskqueue", "healthcheck"]
# The whole shutdown fits in --shutdown-timeout (25s by default); give the
# container longer than that to stop: docker run --stop-timeout 30, or
# terminationGracePeriodSeconds: 30 (Kubernetes' default) or more.
ENTRYPOINT ["/usr/local/bin/taskqueue"]
