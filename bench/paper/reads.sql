-- The paper's three read queries, repeated in this order by its read
-- workloads. The second is SQLite-only SQL (Composer is neither grouped nor
-- aggregated), as in the paper.
SELECT * FROM artists;
SELECT Composer, count(*) AS tracksCount FROM tracks GROUP BY AlbumId;
SELECT Name FROM artists WHERE ArtistId = (SELECT ArtistId FROM albums WHERE AlbumId = 1);
