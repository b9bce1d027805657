# The gateway stub (and the embedded Toxiproxy-compatible proxy), built from this checkout.
# The harness builds it itself (harness/backends/docker.py); by hand:
#   docker build -t gateway-storm-harness/stub .
#   docker run --rm -p 127.0.0.1:18789:18789 gateway-storm-harness/stub
# BASE_IMAGE: any image with Python 3.11 and its venv module, e.g. the one made from Debian's packages on a
# machine with no registry (python -m harness.backends.base_image).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# The dependencies first, from pyproject.toml alone, so that a change to the code reuses this layer.
# pip.conf and pip-ca.crt are optional: the harness adds the build machine's index and CA bundle.
COPY pyproject.toml README.md pip.con[f] pip-ca.cr[t] /src/
RUN if [ -f /src/pip.conf ]; then mv /src/pip.conf /etc/pip.conf; fi \
    && python3 -m venv /opt/venv \
    && pip install "setuptools>=68" wheel \
    && mkdir /src/gateway_stub /src/harness /src/openclaw_wire \
    && touch /src/gateway_stub/__init__.py /src/harness/__init__.py /src/openclaw_wire/__init__.py \
    && pip install --no-build-isolation /src

COPY openclaw_wire /src/openclaw_wire
COPY gateway_stub /src/gateway_stub
COPY harness /src/harness
RUN pip install --no-build-isolation --no-deps --force-reinstall /src && rm -rf /src/build

# Each service binds loopback only inside the container; the bridge publishes it (see loopback_bridge.py).
EXPOSE 18789
ENTRYPOINT ["python", "-m", "harness.backends.loopback_bridge"]
CMD ["--forward", "0.0.0.0:18789=127.0.0.1:18790", "--", \
     "python", "-m", "gateway_stub", "--host", "127.0.0.1", "--port", "18790"]
