"""What a failed download means for the client: one `image_download_failed` sentence per way it fails."""

from __future__ import annotations

import http.client
import ssl

from server.errors import ClientError


def failure(host: str, exc: OSError | http.client.HTTPException | ValueError) -> ClientError:
    """What a network, TLS or HTTP error means for the client."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ClientError(
            "image_download_failed",
            f"The TLS certificate of {host} could not be verified ({exc.verify_message}); "
            "the image must be served with a valid certificate for its host name.",
        )
    if isinstance(exc, ssl.SSLError):
        return ClientError("image_download_failed", f"The TLS connection to {host} failed; check that it serves https.")
    if isinstance(exc, http.client.IncompleteRead):
        return ClientError(
            "image_download_failed",
            f"The image server {host} closed the connection before sending the whole image.",
        )
    if isinstance(exc, OSError):
        return ClientError(
            "image_download_failed",
            f"Could not download the image from {host}: the connection failed or was cut.",
        )
    return ClientError("image_download_failed", f"The image server {host} sent a malformed HTTP response.")


def timed_out(host: str, timeout: float) -> ClientError:
    return ClientError(
        "image_download_failed",
        f"Downloading the image from {host} took longer than the {timeout:g} s timeout.",
    )
