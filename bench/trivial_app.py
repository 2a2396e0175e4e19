"""A trivial Flask JSON endpoint: the reference the HTTP benchmark compares /recommend against."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/ping")
def ping():
    """The cheapest JSON answer Flask can give."""
    return jsonify({"status": "ok"})
