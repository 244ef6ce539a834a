# One image for every llmwatch service (worker, migrate, and later alerts and console).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch first and pinned, as in the Makefile; on PyPI this is the CUDA build, which a GPU worker
# uses and which also runs on CPU.
RUN pip install torch==2.13.0
COPY requirements/lock.txt requirements/lock.txt
RUN pip install -r requirements/lock.txt
COPY . .
RUN pip install --no-deps -e .

RUN useradd --create-home llmwatch
USER llmwatch
ENTRYPOINT ["llmwatch"]
CMD ["status"]
