"""The newsroom workspace: pages for editors and administrators, behind a session."""
