# One image for the operator (`tablerefresh operator`) and the refresh Job (`tablerefresh refresh`).
# Slim, non-root, without the embedded engine (chdb): production talks to a ClickHouse server.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md image.lock ./
COPY operator ./operator
# Every package at its version in image.lock (scripts/lock-image writes it), the build backend included:
# two builds of one commit install the same packages.
ENV PIP_CONSTRAINT=/src/image.lock
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install .

FROM python:3.11-slim
# No .pyc writes on a read-only root filesystem; logs straight to the container runtime.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# 65532: the conventional "nonroot" uid; the pod specs set the same, with runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["tablerefresh"]
CMD ["--help"]
