# The probe as a container: `probe daemon` serving /metrics on port 9464.
# Build: docker build -t censorprobe .
# Run:   docker run -d --name probe -p 127.0.0.1:9464:9464 -v probe-results:/var/lib/probe \
#          censorprobe daemon --listen 0.0.0.0:9464 --vantage NAME --probe-asn AS1234 --probe-cc RU
# No capability is needed for measuring (DNS, TCP, TLS, HTTP, throughput are plain sockets).
# scapy is only used by the censorship lab (root, network namespaces), never in this image's
# default command; see docs/monitoring.md before adding NET_RAW.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/probe --create-home probe

# The same install as the README: `pip install .` from a checkout.
WORKDIR /src
COPY . .
RUN pip install . && rm -rf /src

USER probe
WORKDIR /var/lib/probe
VOLUME ["/var/lib/probe"]
EXPOSE 9464

HEALTHCHECK --interval=60s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=4)"]

ENTRYPOINT ["probe"]
CMD ["daemon", "--listen", "0.0.0.0:9464", "--out", "/var/lib/probe/results"]
