-- The tables of the paper's workloads: the three Chinook tables its queries
-- touch (artists, albums, tracks), with Chinook's columns and indexes.
-- Differences from the paper's dump, so that the same file runs unchanged on
-- sqlite3 and on ReSQLite: no PRAGMA (ReSQLite refuses settings), no
-- FOREIGN KEY clauses (ReSQLite enforces foreign keys, the sqlite3 CLI does
-- not by default; without them both do the same work), no AUTOINCREMENT.
CREATE TABLE artists (
    ArtistId INTEGER PRIMARY KEY NOT NULL,
    Name VARCHAR(120)
);
CREATE TABLE albums (
    AlbumId INTEGER PRIMARY KEY NOT NULL,
    Title VARCHAR(160) NOT NULL,
    ArtistId INTEGER NOT NULL
);
CREATE TABLE tracks (
    TrackId INTEGER PRIMARY KEY NOT NULL,
    Name VARCHAR(200) NOT NULL,
    AlbumId INTEGER,
    MediaTypeId INTEGER NOT NULL,
    GenreId INTEGER,
    Composer VARCHAR(220),
    Milliseconds INTEGER NOT NULL,
    Bytes INTEGER,
    UnitPrice NUMERIC(10,2) NOT NULL
);
CREATE INDEX IFK_AlbumArtistId ON albums (ArtistId);
CREATE INDEX IFK_TrackAlbumId ON tracks (AlbumId);
