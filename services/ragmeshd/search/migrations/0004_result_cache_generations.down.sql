DROP TABLE IF EXISTS search_result_generations;
