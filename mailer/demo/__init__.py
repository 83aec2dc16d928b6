"""Sample content for `mailer demo`, shipped inside the package."""
