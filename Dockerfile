# The mailer service image: `mailer serve`, `mailer db upgrade` and every other command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 mailer
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailer ./mailer
COPY subscribers ./subscribers
COPY templates ./templates
RUN pip install . && mkdir -p /data/outbox && chown -R mailer /data

USER mailer
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["mailer"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
